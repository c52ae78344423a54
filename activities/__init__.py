"""Activities: all I/O (HTTP, SQLite) lives here and only here."""
