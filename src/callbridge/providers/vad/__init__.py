"""providers/vad"""
