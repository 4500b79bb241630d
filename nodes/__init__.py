"""The built-in node catalogue. Every module here is scanned for Node classes."""
