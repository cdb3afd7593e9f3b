// An assembly file, even empty, lets chunkref.go declare chunkReadRefs
// without a body (its body is gVisor's, by linkname).
