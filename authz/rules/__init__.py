"""Rules: compiled once at load, walked per request. One module per family."""
