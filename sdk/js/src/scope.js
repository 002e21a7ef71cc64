// The connection's scope, shaped like Channels' `self.scope`.

/** The user of a connection without a valid token. */
export const ANONYMOUS_USER = Object.freeze({
  id: null,
  name: null,
  email: '',
  isAuthenticated: false,
  isAnonymous: true,
});

/** The host's `scope` record as the SDK's frozen scope object. */
export function toScope(raw) {
  const user = raw.user
    ? Object.freeze({
        id: raw.user.id,
        name: raw.user.name ?? null,
        email: raw.user.email,
        isAuthenticated: true,
        isAnonymous: false,
      })
    : ANONYMOUS_USER;
  const query = raw.query.map(([key, value]) => Object.freeze([key, value]));
  return Object.freeze({
    type: 'websocket',
    connectionId: raw.connectionId,
    path: raw.path,
    urlRoute: Object.freeze({
      args: Object.freeze([]),
      kwargs: Object.freeze(Object.fromEntries(raw.urlKwargs)),
    }),
    // Pairs as the host decoded them (the token removed), and re-encoded for
    // `new URLSearchParams(scope.queryString)`.
    query: Object.freeze(query),
    queryString: new URLSearchParams(raw.query).toString(),
    subprotocols: Object.freeze([...raw.subprotocols]),
    user,
  });
}
