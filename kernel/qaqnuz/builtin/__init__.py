"""Default providers, loaded from `qaqnuz.plugins.BUILTINS`: the safe, embedded choices, plus the opt-in
`anonymous` auth for local development (loopback only)."""
