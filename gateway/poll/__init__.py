"""gateway/poll"""
