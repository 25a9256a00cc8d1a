"""Default providers, loaded from `qaqnuz.plugins.BUILTINS`: the safe, embedded choices."""
