"""Judges of (prompt, response) pairs: ``base`` (the protocol), ``keyword``, ``classifier``, ``guard``,
``ensemble``, and ``factory`` (recipe specs -> judges)."""
