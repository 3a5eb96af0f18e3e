# Scope policy tests.
