"""gateway/outbox"""
