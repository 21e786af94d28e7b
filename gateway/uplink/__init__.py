"""gateway/uplink"""
