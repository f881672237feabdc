/* MPI_IN_PLACE is a macro whose value differs between MPI implementations ((void *)1 in Open MPI,
 * (void *)-1 in MPICH), and rsmpi's bindings do not export it. This one function hands it to Rust. */
#include <mpi.h>

void *sparknet_mpi_in_place(void) { return MPI_IN_PLACE; }
