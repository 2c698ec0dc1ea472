"""The qa service: every video checked against its plan, and audits of videos made elsewhere."""
