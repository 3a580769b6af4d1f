"""llmrack's CrossGuard policy pack: validators (pure functions, unit-tested) and the pack that runs them."""
