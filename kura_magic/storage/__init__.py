"""Where answers, vectors and run records are kept: bytes by key, scoped by experiment."""
