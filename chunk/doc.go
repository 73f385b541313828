// Package chunk is where the two stages of the pipeline meet: a chunk is a
// page of source rows with its key range, its values raw or decoded, or,
// for a straight copy, its rows as COPY tuples. The paginator fills chunks
// and sends them into the channel; the workers take them out, write them
// and release them.
//
// Both stages import this package and neither imports the other. It must
// never import a package of the project, nor know how a chunk is read or
// written.
package chunk
