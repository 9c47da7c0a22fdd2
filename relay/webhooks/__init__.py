"""Outbound webhooks: every task change the app's backend asked for, signed the Standard
Webhooks way and delivered at least once.

messages.py decides which changes become which messages (the store queues them in the
same atomic write as the change); sender.py delivers them; routes.py shows and redoes
them. The outbox itself is a seam (relay/backends/base.py `Outbox`).
"""
