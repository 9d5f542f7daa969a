"""newsdesk's answer engine and its front ends (CLI, Telegram)."""
