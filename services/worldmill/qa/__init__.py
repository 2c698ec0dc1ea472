"""the qa service: every video checked against its plan; audit of existing videos"""
