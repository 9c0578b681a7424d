"""Runnable examples; a package so ``edge-agent --app examples.a2a_agent:app`` imports them."""
