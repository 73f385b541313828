// Package transform turns one source row into one destination row.
//
// The worker hands every row it reads to a Transformer, which fills the
// destination values (or filters the row out). The identity transformer copies
// same-named columns; expression and Go-function transformers live beside it.
//
// A transform must be pure and deterministic: a chunk redone after a crash
// must write exactly the values the first attempt would have written. This
// package never touches the database.
package transform
