/* The only header bindgen sees. `uwsgi.h` is the dump of the target binary's own header
 * (`uwsgi --dot-h`), compiled with that binary's `uwsgi --cflags` defines. */
#include "uwsgi.h"

/* Defined in core/uwsgi.c but not declared by uwsgi.h. */
extern struct uwsgi_server uwsgi;
