<?php
/**
 * A small PHP session store for the data model tower-redis-session uses with
 * `plain_keys(true)`, so a PHP app and a Rust app share sessions in one Redis.
 *
 * - One Redis hash per session under `session:{id}`, with a TTL.
 * - Internal fields: `created_at`, `last_accessed_at` (RFC 3339, written in UTC as
 *   `+00:00`), `session_ttl` (idle TTL in whole seconds). The Rust side adds
 *   `absolute_expires_at` and `user_id`, and `rotating` while it moves a session to a
 *   new ID. This store reads them and never writes them.
 * - A hash without `session_ttl` is not a session: it is a short-lived marker (`ended`)
 *   that the Rust side leaves where a session was rotated away, destroyed or ended.
 * - IDs: new ones are `bin2hex(random_bytes(16))`; the Rust side makes its own (43
 *   characters of URL-safe base64), and this store accepts both.
 *
 * Every write goes through a small Lua script that runs only if the key still holds a
 * live session, so a write racing a logout or a rotation cannot bring the session back
 * (a bare HSET on a deleted key would make a hash with no TTL) and cannot land on a
 * session that is being moved (it would be lost). Uses Predis (1.1 or later).
 */

declare(strict_types=1);

final class LoadedSession
{
    /**
     * @param string $id         the session ID (the cookie value)
     * @param array<string,string> $fields the user fields (internal ones left out)
     * @param int    $ttl        the idle TTL in seconds (`session_ttl`)
     * @param float|null $deadline when the session ends however active (Unix seconds)
     * @param bool   $moving     the Rust side is moving it to a new ID: readable, not writable
     */
    public function __construct(
        public readonly string $id,
        public readonly array $fields,
        public readonly int $ttl,
        public readonly ?float $deadline,
        public readonly bool $moving,
    ) {
    }
}

final class RedisSessionStore
{
    /** Fields this store never lets the app set, remove or see as user data. */
    public const RESERVED = [
        'created_at', 'last_accessed_at', 'session_ttl',
        'absolute_expires_at', 'user_id', 'rotating', 'ended',
    ];

    /** Creates the hash only if the key is free: a collision never overwrites. */
    private const CREATE = <<<'LUA'
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
        redis.call('EXPIRE', KEYS[1], ARGV[1])
        return 1
        LUA;

    /**
     * Applies changes to a live session only. ARGV: last_accessed_at, EXPIRE seconds,
     * new session_ttl or '', then (op, field, value) triples, op one of set, del, incr.
     * Returns 1 applied, 0 no live session (gone, a marker, being moved), -1 not an integer.
     */
    private const SAVE = <<<'LUA'
        if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
        local s = redis.call('HMGET', KEYS[1], 'session_ttl', 'ended', 'rotating')
        if not s[1] or s[2] or s[3] then return 0 end
        for i = 4, #ARGV, 3 do
          if ARGV[i] == 'incr' then
            local v = redis.call('HGET', KEYS[1], ARGV[i + 1])
            if v and not string.match(v, '^-?%d+$') then return -1 end
          end
        end
        for i = 4, #ARGV, 3 do
          local op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
          if op == 'set' then redis.call('HSET', KEYS[1], field, value)
          elseif op == 'del' then redis.call('HDEL', KEYS[1], field)
          else redis.call('HINCRBY', KEYS[1], field, value) end
        end
        if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'session_ttl', ARGV[3]) end
        redis.call('HSET', KEYS[1], 'last_accessed_at', ARGV[1])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return 1
        LUA;

    /** Logout: the session becomes a `destroyed` marker for a minute, as on the Rust side. */
    private const DESTROY = <<<'LUA'
        if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
        if not redis.call('HGET', KEYS[1], 'session_ttl') then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'ended', 'destroyed')
        redis.call('EXPIRE', KEYS[1], 60)
        return 1
        LUA;

    /**
     * @param int|null $absoluteLifetime the Rust layer's `absolute_lifetime` in seconds
     *   (null if it has none): a session without `absolute_expires_at` ends this long
     *   after its `created_at`, as the Rust side decides.
     */
    public function __construct(
        private readonly \Predis\ClientInterface $redis,
        private readonly string $prefix = 'session:',
        private readonly int $defaultTtl = 1800,
        private readonly ?int $absoluteLifetime = 12 * 3600,
    ) {
    }

    /** An ID either side may have made: 32 lowercase hex digits (ours) or the Rust side's. */
    public static function isValidId(string $id): bool
    {
        if (preg_match('/^[0-9a-f]{32}$/D', $id) === 1) {
            return true;
        }
        // 32 bytes as URL-safe base64 without padding, in canonical form.
        if (preg_match('/^[A-Za-z0-9_-]{43}$/D', $id) !== 1) {
            return false;
        }
        $bytes = base64_decode(strtr($id, '-_', '+/'), true);
        return $bytes !== false
            && rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=') === $id;
    }

    /** Reads a session and refreshes its idle TTL; null if there is none. */
    public function load(string $id): ?LoadedSession
    {
        if (!self::isValidId($id)) {
            return null;
        }
        try {
            $hash = $this->redis->hgetall($this->prefix . $id);
        } catch (\Predis\Response\ServerException $e) {
            return null; // not a hash
        }
        $session = $this->read($id, $hash);
        if ($session !== null && !$session->moving && !$this->apply($session, [], null)) {
            return null; // ended between the read and the touch
        }
        return $session;
    }

    /** Starts a session holding `$fields` and returns its new ID. */
    public function create(array $fields, ?int $ttl = null): string
    {
        $ttl ??= $this->defaultTtl;
        self::checkTtl($ttl);
        $now = self::stamp();
        $args = [$ttl, 'created_at', $now, 'last_accessed_at', $now, 'session_ttl', (string) $ttl];
        foreach ($fields as $field => $value) {
            self::checkField((string) $field);
            array_push($args, (string) $field, (string) $value);
        }
        for ($try = 0; $try < 3; $try++) {
            $id = bin2hex(random_bytes(16));
            if ($this->redis->eval(self::CREATE, 1, $this->prefix . $id, ...$args) === 1) {
                return $id;
            }
        }
        throw new \RuntimeException('three session ID collisions in a row');
    }

    /**
     * Applies changes to a loaded session: `$set` field => value, `$remove` field names,
     * `$increment` field => delta (HINCRBY), `$ttl` a new idle TTL. Returns false, and
     * changes nothing, if the session ended, is past its deadline or is being moved
     * to a new ID meanwhile: load it again (or start a new one).
     */
    public function save(
        LoadedSession $session,
        array $set = [],
        array $remove = [],
        array $increment = [],
        ?int $ttl = null,
    ): bool {
        $ops = [];
        foreach ($set as $field => $value) {
            self::checkField((string) $field);
            array_push($ops, 'set', (string) $field, (string) $value);
        }
        foreach ($remove as $field) {
            self::checkField((string) $field);
            array_push($ops, 'del', (string) $field, '');
        }
        foreach ($increment as $field => $by) {
            self::checkField((string) $field);
            array_push($ops, 'incr', (string) $field, (string) (int) $by);
        }
        if ($ttl !== null) {
            self::checkTtl($ttl);
        }
        return !$session->moving && $this->apply($session, $ops, $ttl);
    }

    /** Logout. */
    public function destroy(string $id): void
    {
        if (self::isValidId($id)) {
            $this->redis->eval(self::DESTROY, 1, $this->prefix . $id);
        }
    }

    /** What a hash says, or null if it holds no live session. */
    private function read(string $id, array $hash): ?LoadedSession
    {
        $ttl = $hash['session_ttl'] ?? '';
        $created = self::parseTime($hash['created_at'] ?? '');
        $ttlOk = preg_match('/^[1-9][0-9]{0,9}$/D', $ttl) === 1 && (int) $ttl <= 2147483647;
        if (isset($hash['ended']) || !$ttlOk || $created === null) {
            return null; // a marker, or not a session of this data model
        }
        $now = microtime(true);
        if ($created > $now + 300) {
            // More than 5 minutes ahead: it would stretch the absolute lifetime by as
            // much, so the Rust side does not use such a session either.
            return null;
        }
        $deadline = null;
        if (isset($hash['absolute_expires_at'])) {
            $deadline = self::parseTime($hash['absolute_expires_at']);
            if ($deadline === null) {
                return null;
            }
        }
        if ($this->absoluteLifetime !== null) {
            // Never later than created_at + the lifetime, whatever absolute_expires_at
            // says (created_at is whole seconds: its lost fraction is allowed).
            $cap = $created + $this->absoluteLifetime;
            $deadline = $deadline === null ? $cap : min($deadline, $cap + 0.999);
        }
        if ($deadline !== null && $now >= $deadline) {
            return null; // over, however active (the Rust side deletes it at its next load)
        }
        $fields = array_diff_key($hash, array_flip(self::RESERVED));
        return new LoadedSession($id, $fields, (int) $ttl, $deadline, isset($hash['rotating']));
    }

    private function apply(LoadedSession $session, array $ops, ?int $ttl): bool
    {
        $expire = $ttl ?? $session->ttl;
        if ($session->deadline !== null) {
            // Never keep the key past the deadline.
            $expire = min($expire, (int) ceil($session->deadline - microtime(true)));
            if ($expire <= 0) {
                return false;
            }
        }
        $args = [self::stamp(), $expire, $ttl === null ? '' : (string) $ttl, ...$ops];
        $done = $this->redis->eval(self::SAVE, 1, $this->prefix . $session->id, ...$args);
        if ($done === -1) {
            throw new \InvalidArgumentException('increment of a field that holds no integer');
        }
        return $done === 1;
    }

    /** Now, as the Rust side writes it: RFC 3339, UTC, `+00:00`, whole seconds. */
    private static function stamp(): string
    {
        return gmdate('Y-m-d\TH:i:s') . '+00:00';
    }

    /** RFC 3339 with or without fractional seconds, `Z` or any offset, to Unix seconds. */
    public static function parseTime(string $text): ?float
    {
        // The crate's grammar: any number of fraction digits, `T`/`t`, `Z`/`z`, at most 64 bytes.
        $rfc3339 = '/^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/D';
        if (strlen($text) > 64 || preg_match($rfc3339, $text) !== 1) {
            return null;
        }
        $text = strtoupper($text);
        // PHP keeps microseconds: cut longer fractions to 6 digits.
        $text = preg_replace('/(\.\d{6})\d+/', '$1', $text);
        try {
            return (float) (new \DateTimeImmutable($text))->format('U.u');
        } catch (\Exception $e) {
            return null;
        }
    }

    private static function checkField(string $field): void
    {
        if ($field === '' || in_array($field, self::RESERVED, true)) {
            throw new \InvalidArgumentException("field \"$field\" is reserved or empty");
        }
    }

    private static function checkTtl(int $ttl): void
    {
        if ($ttl < 1 || $ttl > 2147483647) {
            throw new \InvalidArgumentException('a session TTL must be between 1 second and 68 years');
        }
    }
}
