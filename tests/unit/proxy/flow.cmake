# Flow builder tests.
