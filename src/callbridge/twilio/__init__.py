"""twilio"""
