# Brewer-Nash (Chinese Wall), SPEC §12.
#
# Access (any action) to an object of dataset D in conflict class C is
# allowed unless an ancestor of the same user accessed a resource whose
# resource_attributes have conflict_class C and a dataset other than D.
# Missing object.attributes.dataset / conflict_class (strings) or a missing
# subject.user (a non-empty string: the wall is per user) deny.
package kest.brewer_nash

default allow := false

default ancestors := []

ancestors := input.lineage.ancestors if is_array(input.lineage.ancestors)

user := input.subject.user if {
	is_string(input.subject.user)
	input.subject.user != ""
}

dataset := input.object.attributes.dataset if is_string(input.object.attributes.dataset)

conflict_class := input.object.attributes.conflict_class if is_string(input.object.attributes.conflict_class)

# History: the same user already accessed another dataset of this class.
default other_dataset_in_class := false

other_dataset_in_class if {
	some a in ancestors
	a.user == user
	a.resource_attributes.conflict_class == conflict_class
	other := a.resource_attributes.dataset
	other != null
	other != dataset
}

allow if {
	is_string(user)
	is_string(dataset)
	is_string(conflict_class)
	not other_dataset_in_class
}
