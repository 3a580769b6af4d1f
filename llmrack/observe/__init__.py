"""Reading what the rack did from Prometheus: canary judgement and traffic drift."""
