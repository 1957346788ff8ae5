"""End-of-turn models: does the caller sound finished?"""
