"""A GraphQL document's cost, refused above a limit before anything runs.

Every field costs 1, plus its sub-selection's cost times its list size: the value of its
``first`` or ``k`` argument (a literal; a variable counts as that argument's largest allowed
value, since validation runs before variables are known; none given: the schema's default).
So ``products(first: 100) { edges { node { similar(k: 100) { score } } } }`` costs about
10,300: each of its 100 products runs a 100-neighbour search. Fragments count where they are
spread; aliases count each time.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import AddValidationRules


def selection_cost(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    largest: Mapping[str, int],
    spread: frozenset[str] = frozenset(),
) -> int:
    """The cost of ``selection`` on ``parent`` (``largest``: list-size argument -> its most)."""
    if selection is None:
        return 0
    total = 0
    for node in selection.selections:
        if isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = fragments.get(name)
            if fragment is None or name in spread:  # unknown or cyclic: other rules report it
                continue
            on = schema.get_type(fragment.type_condition.name.value)
            if isinstance(on, GraphQLObjectType):
                total += selection_cost(
                    schema, on, fragment.selection_set, fragments, largest, spread | {name}
                )
        elif isinstance(node, InlineFragmentNode):
            on = schema.get_type(node.type_condition.name.value) if node.type_condition else parent
            if isinstance(on, GraphQLObjectType):
                total += selection_cost(schema, on, node.selection_set, fragments, largest, spread)
        elif isinstance(node, FieldNode):
            total += 1
            definition = parent.fields.get(node.name.value)
            if definition is None:  # __typename, introspection, or unknown (reported elsewhere)
                continue
            size = 1
            for name, most in largest.items():
                if name not in definition.args:
                    continue
                given = next((a.value for a in node.arguments or () if a.name.value == name), None)
                if isinstance(given, IntValueNode):
                    size = max(size, int(given.value))
                elif isinstance(given, VariableNode):
                    size = max(size, most)
                elif isinstance(definition.args[name].default_value, int):
                    size = max(size, definition.args[name].default_value)
            child = get_named_type(definition.type)
            if isinstance(child, GraphQLObjectType):
                total += size * selection_cost(
                    schema, child, node.selection_set, fragments, largest, spread
                )
    return total


class QueryCostLimiter(AddValidationRules):
    """Refuses documents whose operations cost more than ``max_cost`` (see the module)."""

    def __init__(self, max_cost: int, largest: Mapping[str, int]) -> None:
        class CostRule(ValidationRule):
            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                document, schema = context.document, context.schema
                fragments = {
                    d.name.value: d
                    for d in document.definitions
                    if isinstance(d, FragmentDefinitionNode)
                }
                for operation in document.definitions:
                    if not isinstance(operation, OperationDefinitionNode):
                        continue
                    root = schema.get_root_type(operation.operation)
                    if root is None:
                        continue
                    cost = selection_cost(schema, root, operation.selection_set, fragments, largest)
                    if cost > max_cost:
                        context.report_error(
                            GraphQLError(
                                f"query cost {cost} is over the limit of {max_cost} (each field"
                                " counts 1, times the `first` or `k` of the lists around it)"
                            )
                        )

        super().__init__([CostRule])
