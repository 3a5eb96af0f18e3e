# Tests of the OTLP encodings and exporter.
