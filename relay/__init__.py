"""Relay: a bridge between AI generation providers and the browsers waiting on them."""
