"""The command line, `mmv-zoo`: parses, calls the library, prints; it owns no decision of its own."""
