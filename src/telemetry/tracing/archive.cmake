# Owned by the span-archive work: defines oxg_trace_archive.
