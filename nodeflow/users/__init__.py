"""Multi-user mode (``nodeflow serve --users``): accounts, projects, sharing, class templates and
disk quotas, kept in the server's folder. Signing in to the web server is in
:mod:`nodeflow.users.login` (it needs FastAPI), the ``users`` command in :mod:`nodeflow.users.command`."""

from nodeflow.users.accounts import AccountError, Accounts, TokenInfo, User
from nodeflow.users.projects import ClassTemplate, NotAllowed, Project, ProjectNotFound, Projects
from nodeflow.users.quota import DiskQuota, QuotaExceeded

__all__ = ["AccountError", "Accounts", "ClassTemplate", "DiskQuota", "NotAllowed", "Project", "ProjectNotFound",
           "Projects", "QuotaExceeded", "TokenInfo", "User"]
