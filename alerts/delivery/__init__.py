"""Webhook delivery: durable outbox, SSRF guard, Standard Webhooks signing, payload formats."""
