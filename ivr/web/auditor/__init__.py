"""The auditor's workspace: login, search, call pages and evidence exports (server-rendered).

`workspace.init_app` attaches the views and registers them; importing a module of this
package runs none of the others, so a view may import any of them."""
