"""Generator plugins shipped with bench. Each subpackage is one generator family; see bench/generator.py
for the contract a plugin implements and how third-party packages register theirs."""
