"""Who may do what with a workflow: the roles each kind of access needs.

The workflow's ``owner`` has the role ``owner`` without a member row; everyone else has the
role of their ``WorkflowMember`` row, or none.
"""

from .models import WorkflowMemberRole as Role

CAN_VIEW = frozenset({Role.OWNER, Role.EDITOR, Role.VIEWER, Role.EXECUTOR})
CAN_RUN = frozenset({Role.OWNER, Role.EDITOR, Role.EXECUTOR})
CAN_EDIT = frozenset({Role.OWNER, Role.EDITOR})
CAN_MANAGE = frozenset({Role.OWNER})
