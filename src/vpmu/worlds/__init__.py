"""Built-in worlds (TOML files beside this module); see vpmu.check.world."""
