/*
 * The operations of each kind of node, as its providers give them (ops.c):
 * what main.c hands the tree (tree_options.kind_ops).
 */
#ifndef OCIFS_OPS_H
#define OCIFS_OPS_H

#include "node.h"

extern const struct node_ops *const node_kind_ops[NODE_KINDS];

#endif
