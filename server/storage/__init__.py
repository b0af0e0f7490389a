"""Storage: connections, transactions and schema migrations."""
