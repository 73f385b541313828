// Package jobspec reads a job spec file: the YAML form of everything
// `backfill start` takes, which a team can review in a pull request.
//
// Decoding is strict: an unknown key, a wrong type or a repeated key is an
// error that names the key and its line. The destination columns under
// `columns:` keep the order they are written in. This package only reads
// and checks the file; it knows nothing of databases.
package jobspec
