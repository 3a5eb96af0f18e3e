# HTTP head parser tests (filled in by the parser work).
