/* C shim, compiled by build.rs with exactly the defines bindgen saw (the target uWSGI's
 * `uwsgi --cflags`). It holds what bindgen cannot express: function-like macros and facts
 * that only the C compiler knows for this configuration. One wrapper per macro, no logic. */
#include "uwsgi.h"

extern struct uwsgi_server uwsgi;

/* sizeof(struct uwsgi_server) for the header and defines this plugin was built with; compared
 * at load time with the size of the running binary's `uwsgi` symbol. */
const size_t uwsgi_rs_sizeof_server = sizeof(struct uwsgi_server);

/* uwsgi_rlock()/uwsgi_rwunlock() are macros over uwsgi.lock_ops (which differs between the
 * default lock engine and ipcsem). */
void uwsgi_rs_metrics_rlock(void) { uwsgi_rlock(uwsgi.metrics_lock); }
void uwsgi_rs_metrics_rwunlock(void) { uwsgi_rwunlock(uwsgi.metrics_lock); }
