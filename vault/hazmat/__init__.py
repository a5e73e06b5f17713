"""The dangerous layer.

Functions here take raw key material and raw feature vectors. Used wrongly (a key reused across
tenants, features logged, codes stored unsealed) they destroy the properties the vault exists for.
Service code goes through `vault.templates.protection`, which applies them with the right keys and profiles.
"""
