"""Example what-if scenarios for the Kalundborg-like park (`parkmon whatif --list`)."""
