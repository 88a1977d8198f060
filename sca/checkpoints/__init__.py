"""Reading saved models: weight files (safely), the reference implementation's layout, model presets."""
