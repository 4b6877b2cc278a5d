"""The guest: its PMU instructions, its programs and its PMI handler."""
