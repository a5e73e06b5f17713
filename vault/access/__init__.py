"""Access: who may call what, and what they leave behind: identities and roles, API tokens,
the lockout rule, the audit chain."""
