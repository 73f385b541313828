// Package retry decides which database errors are worth trying again, and
// waits between tries.
//
// Only errors classified as transient are retried: the connection was lost
// or refused, the server is shutting down or restarting, too many
// connections, a serialization failure or deadlock, a lock or statement
// timeout. Everything else (a constraint violation, bad data, a syntax
// error, a permission) is permanent: trying again would fail the same way,
// so it is returned at once. Waits use exponential backoff with full jitter
// and always end with the context.
//
// This package never runs SQL itself.
package retry
