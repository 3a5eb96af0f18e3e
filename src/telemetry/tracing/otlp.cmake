# Owned by the OTLP work: defines oxg_otlp (encodings) and oxg_otlp_http (exporter).
