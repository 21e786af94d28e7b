"""gateway/config"""
