# Tests of the span archive.
