"""Drills: the attacker played against a real deployment (leak drill, hill climb)."""
