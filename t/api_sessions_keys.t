#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module, session keys: the login-token
# example of seeds/001 across workers and connections, custom keys before
# the built-in chain, every built-in entry with its label and value space,
# name= labels, api_sessions_builtin_keys off, inheritance of key and flow
# lists, $api_session_id and $api_session_key, and raw key values never
# exported.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(57);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_node keys-node;

    # the API behind: not captured (api_sessions is off by default)
    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  backend;

        default_type application/json;

        location /login/ {
            return 200 '{"hash":{"token":"$http_x_issue"},"in":"bbb"}';
        }

        location /echo {
            default_type text/plain;
            return 200 '$http_x_sid|$http_x_skey';
        }

        location / {
            return 200 '{"ok":true}';
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8080%% reuseport;
        server_name  localhost;

        api_sessions on;

        add_header X-Pid $pid always;

        # seeds/001: the login response returns the token, later requests
        # send it as ?token= or in the JSON body
        location /seed/ {
            api_sessions_key response_body:/hash/token;
            api_sessions_key $arg_token;
            api_sessions_key request_body:/hash/token;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /builtin/ {
            return 204;
        }

        location /custom/ {
            api_sessions_key $http_x_token;
            api_sessions_key $arg_t name=t-label;
            return 204;
        }

        location /nobuiltin/ {
            api_sessions_builtin_keys off;
            api_sessions_key $arg_t;
            return 204;
        }

        location /vars/ {
            api_sessions_key $arg_t name=t;
            add_header X-Pid $pid always;
            add_header X-Session-Id $api_session_id always;
            add_header X-Session-Key $api_session_key always;
            proxy_set_header X-Sid $api_session_id;
            proxy_set_header X-Skey $api_session_key;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/echo;
        }

        location /vars-body/ {
            api_sessions_key request_body:/user/id name=body-id;
            add_header X-Session-Id $api_session_id always;
            add_header X-Session-Key $api_session_key always;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }
    }

    # inheritance of the key and flow lists
    server {
        listen       127.0.0.1:%%PORT_8082%%;
        server_name  inherit;

        api_sessions on;
        api_sessions_key $arg_s name=server-key;
        api_sessions_flow auth;

        location /inherit/ {
            return 204;
        }

        location /own/ {
            api_sessions_key $arg_l name=loc-key;
            return 204;
        }

        location /flows-off/ {
            api_sessions_flow off;
            return 204;
        }

        location /flows-own/ {
            api_sessions_flow billing admin;
            return 204;
        }

        location /builtin-off/ {
            api_sessions_builtin_keys off;
            return 204;
        }

        location /off/ {
            api_sessions off;
            return 204;
        }
    }
}

EOF

$t->write_file('secret', "0123456789abcdef0123456789abcdef\n");
$t->run();

###############################################################################

# Raw key values, to be found nowhere in the export file.  User-Agent and
# client address are exported as record fields by design and are not here.
my @raw;
my $n = 0;

sub raw {
	my ($what) = @_;
	my $v = sprintf('raw-%s-%d-%08x', $what, ++$n, int(rand(2**32)));
	push @raw, $v;
	return $v;
}

sub get {
	my ($uri, @headers) = @_;
	my %o = ref $headers[-1] ? %{pop @headers} : ();

	return http("GET $uri HTTP/1.0\r\nHost: localhost\r\n"
		. join('', map { "$_\r\n" } @headers) . "\r\n", %o);
}

my $expected = 0;
my %by_path;

# Waits for every record so far; records are indexed by path, which each
# request makes unique.
sub records {
	my @records = $t->wait_records($expected);
	%by_path = ();
	push @{$by_path{$_->{path}}}, $_ for @records;
	return @records;
}

sub rec {
	my ($path) = @_;
	my $r = $by_path{$path} or return {};
	return @$r == 1 ? $r->[0] : { error => scalar(@$r) . " records" };
}

sub fields {
	my ($path, @names) = @_;
	my $r = rec($path);
	return join ' ', map { $r->{$_} // 'null' } @names;
}

###############################################################################

# seeds/001: login response token, then ?token=, then the body token, each
# request on its own connection; repeated with fresh tokens until one
# session was served by both workers

my (@rounds, $spanning);

for my $round (1 .. 10) {
	my $tok = raw('token');
	my @pids;

	my $r = http_post_json("/seed/login/$round", '{"in":"bbb"}',
		'X-Issue' => $tok);
	push @pids, http_header($r, 'X-Pid');

	$r = get("/seed/items/$round?token=$tok");
	push @pids, http_header($r, 'X-Pid');

	$r = http_post_json("/seed/update/$round",
		qq|{"in":"ccc","hash":{"token":"$tok"}}|);
	push @pids, http_header($r, 'X-Pid');

	$expected += 3;
	push @rounds, [ $round, $tok, @pids ];

	my %distinct = map { $_ // 'none' => 1 } @pids;
	$spanning = $round if keys %distinct == 2;

	last if $spanning && $round >= 3;
}

records();

my (@grouped, @labels, @hashes, @pids_match, %ids);

for my $round (@rounds) {
	my ($i, $tok, @pids) = @$round;
	my @r = map { rec($_) } "/seed/login/$i", "/seed/items/$i",
		"/seed/update/$i";

	my %sid = map { $_->{session_id} // 'none' => 1 } @r;
	my %kh = map { $_->{key_hash} // 'none' => 1 } @r;

	push @grouped, keys %sid == 1 && !$sid{none} ? 1 : 0;
	push @hashes, keys %kh == 1 && !$kh{none} ? 1 : 0;
	push @labels, join ',', map { ($_->{session_key} // 'null') . ':'
		. ($_->{session_key_builtin} ? 'builtin' : 'custom') } @r;
	push @pids_match, join(',', map { $_->{pid} // 'null' } @r)
		eq join(',', map { $_ // 'none' } @pids) ? 1 : 0;

	$ids{$_}++ for keys %sid;
}

ok($spanning, 'seed: a session served by both workers');
is("@grouped", join(' ', (1) x @rounds), 'seed: one session per token');
is("@hashes", join(' ', (1) x @rounds), 'seed: one key hash per token');
is_deeply(\@labels, [ ('response_body:/hash/token:custom,'
	. '$arg_token:custom,request_body:/hash/token:custom') x @rounds ],
	'seed: labels of the three keys');
is(scalar keys %ids, scalar @rounds, 'seed: tokens make distinct sessions');
is("@pids_match", join(' ', (1) x @rounds), 'seed: record pid is the worker');

my $seed = rec('/seed/login/1');
like($seed->{session_start} // '', qr/^\d{4}-\d\d-\d\dT00:00:00\.000Z$/,
	'seed: session starts at UTC midnight without a zone');
is(substr($seed->{session_start} // '', 0, 10),
	substr($seed->{ts} // 'none', 0, 10), 'seed: session start is that day');
is(fields('/seed/login/1', qw/node method status/), 'keys-node POST 200',
	'seed: record fields');

###############################################################################

# the built-in chain: each entry alone

my @cookies = qw/ PHPSESSID JSESSIONID ASP.NET_SessionId connect.sid
	laravel_session _session_id sessionid session sid /;

my %value;    # label -> raw value used for it

for my $i (0 .. $#cookies) {
	my $v = $value{"cookie:$cookies[$i]"} = raw('cookie');
	get("/builtin/cookie/$i", "Cookie: theme=dark; $cookies[$i]=$v; x=1",
		'User-Agent: keys-test');
	$expected++;
}

my @headers = (
	[ 'SESSION-ID', 'header:Session-Id' ],
	[ 'x-session-id', 'header:X-Session-Id' ],
	[ 'X-Session-Token', 'header:X-Session-Token' ],
	[ 'MCP-SESSION-ID', 'header:Mcp-Session-Id' ],
	[ 'Authorization', 'header:Authorization' ],
);

for my $i (0 .. $#headers) {
	my ($name, $label) = @{$headers[$i]};
	my $v = $value{$label} = raw('header');
	$v = "Bearer $v" if $name eq 'Authorization';
	get("/builtin/header/$i", "$name: $v", 'User-Agent: keys-test');
	$expected++;
}

# client address and User-Agent; address alone without User-Agent

get('/builtin/ipua/1', 'User-Agent: agent-1');
get('/builtin/ipua/2', 'User-Agent: agent-1');
get('/builtin/ipua/3', 'User-Agent: agent-2');
get('/builtin/ip/1');
get('/builtin/ip/2');
$expected += 5;

records();

is_deeply([ map { fields("/builtin/cookie/$_", 'session_key') }
	0 .. $#cookies ], [ map { "cookie:$_" } @cookies ], 'cookie labels');
is_deeply([ map { fields("/builtin/header/$_", 'session_key') }
	0 .. $#headers ], [ map { $_->[1] } @headers ], 'header labels');
is(join(' ', map { fields("/builtin/$_", 'session_key') }
	qw{ ipua/1 ipua/2 ipua/3 ip/1 ip/2 }), 'ip+ua ip+ua ip+ua ip ip',
	'ip+ua and ip labels');
is(join(' ', map { rec($_)->{session_key_builtin} ? 1 : 0 }
	(map { "/builtin/cookie/$_" } 0 .. $#cookies),
	(map { "/builtin/header/$_" } 0 .. $#headers), '/builtin/ip/1'),
	join(' ', (1) x (@cookies + @headers + 1)), 'built-ins marked builtin');

my %ipua = map { $_ => rec("/builtin/$_") } qw{ ipua/1 ipua/2 ipua/3 ip/1 ip/2 };

is($ipua{'ipua/1'}{key_hash}, $ipua{'ipua/2'}{key_hash},
	'ip+ua: same agent, same key');
is($ipua{'ipua/1'}{session_id}, $ipua{'ipua/2'}{session_id},
	'ip+ua: same agent, same session');
isnt($ipua{'ipua/1'}{key_hash}, $ipua{'ipua/3'}{key_hash},
	'ip+ua: other agent, other key');
is($ipua{'ip/1'}{key_hash}, $ipua{'ip/2'}{key_hash}, 'ip: same key');
isnt($ipua{'ip/1'}{key_hash}, $ipua{'ipua/1'}{key_hash}, 'ip is not ip+ua');
is(join(' ', map { $ipua{$_}{user_agent} // 'null' } qw{ ipua/3 ip/1 }),
	'agent-2 null', 'user_agent field');

###############################################################################

# chain order, whatever the header order; the winner's value decides the
# key hash, which must be that of the same entry alone

my %hash_of = map { fields("/builtin/cookie/$_", 'session_key')
	=> fields("/builtin/cookie/$_", 'key_hash') } 0 .. $#cookies;
$hash_of{fields("/builtin/header/$_", 'session_key')}
	= fields("/builtin/header/$_", 'key_hash') for 0 .. $#headers;

my %v = %value;
my @chain = (
	[ 'cookie:PHPSESSID',
		"Authorization: Bearer $v{'header:Authorization'}",
		"X-Session-Id: $v{'header:X-Session-Id'}",
		"Cookie: sid=$v{'cookie:sid'}; "
			. "JSESSIONID=$v{'cookie:JSESSIONID'}",
		"Cookie: PHPSESSID=$v{'cookie:PHPSESSID'}",
		'User-Agent: keys-test' ],
	[ 'cookie:JSESSIONID',
		'Cookie: ' . join('; ', map { "$_=$v{qq{cookie:$_}}" }
			reverse @cookies[1 .. $#cookies]) ],
	[ 'cookie:session',
		"Mcp-Session-Id: $v{'header:Mcp-Session-Id'}",
		"Cookie: sid=$v{'cookie:sid'}; session=$v{'cookie:session'}" ],
	[ 'cookie:sid',
		"Session-Id: $v{'header:Session-Id'}",
		"Cookie: sid=$v{'cookie:sid'}" ],
	[ 'header:Session-Id',
		"Mcp-Session-Id: $v{'header:Mcp-Session-Id'}",
		"X-Session-Token: $v{'header:X-Session-Token'}",
		"X-Session-Id: $v{'header:X-Session-Id'}",
		"session-id: $v{'header:Session-Id'}",
		"Authorization: Bearer $v{'header:Authorization'}" ],
	[ 'header:X-Session-Id',
		"Mcp-Session-Id: $v{'header:Mcp-Session-Id'}",
		"X-Session-Token: $v{'header:X-Session-Token'}",
		"X-Session-Id: $v{'header:X-Session-Id'}" ],
	[ 'header:X-Session-Token',
		"Authorization: Bearer $v{'header:Authorization'}",
		"Mcp-Session-Id: $v{'header:Mcp-Session-Id'}",
		"X-Session-Token: $v{'header:X-Session-Token'}" ],
	[ 'header:Mcp-Session-Id',
		"Authorization: Bearer $v{'header:Authorization'}",
		"Mcp-Session-Id: $v{'header:Mcp-Session-Id'}",
		'User-Agent: keys-test' ],
	[ 'header:Authorization',
		"Authorization: Bearer $v{'header:Authorization'}",
		'User-Agent: keys-test' ],
);

for my $i (0 .. $#chain) {
	my ($label, @h) = @{$chain[$i]};
	get("/builtin/chain/$i", @h);
	$expected++;
}

# one value in several built-in entries: a value space each

my $same = raw('same');
my @spaces = (
	"Cookie: PHPSESSID=$same",
	"Cookie: sid=$same",
	"Session-Id: $same",
	"X-Session-Id: $same",
	"Authorization: $same",
);

get("/builtin/space/$_", $spaces[$_], 'User-Agent: keys-test')
	for 0 .. $#spaces;
get('/builtin/space/again', $spaces[0], 'User-Agent: other');
$expected += @spaces + 1;

records();

is_deeply([ map { fields("/builtin/chain/$_", 'session_key') } 0 .. $#chain ],
	[ map { $_->[0] } @chain ], 'chain order');
is_deeply([ map { fields("/builtin/chain/$_", 'key_hash') } 0 .. $#chain ],
	[ map { $hash_of{$_->[0]} // 'missing' } @chain ],
	'chain: the winning entry\'s value');

my @space = map { rec("/builtin/space/$_") } 0 .. $#spaces;
my %space_hashes = map { $_->{key_hash} // 'none' => 1 } @space;

is(join(' ', map { $_->{session_key} // 'null' } @space),
	'cookie:PHPSESSID cookie:sid header:Session-Id header:X-Session-Id '
	. 'header:Authorization', 'value spaces: labels');
is(scalar(grep { $_ ne 'none' } keys %space_hashes), scalar @spaces,
	'value spaces: same value, distinct key hashes');
is(rec('/builtin/space/again')->{key_hash}, $space[0]{key_hash},
	'value spaces: same entry and value, same key hash');
is(rec('/builtin/space/again')->{session_id}, $space[0]{session_id},
	'value spaces: same entry and value, same session');

###############################################################################

# custom keys before the built-in chain; one value space for all custom
# keys, whatever their labels

my $xt = raw('xtoken');
my $shared = raw('shared');

get('/custom/1', "X-Token: $xt", "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}",
	"Authorization: Bearer $value{'header:Authorization'}");
get("/custom/2?t=$xt", "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}");
get('/custom/3', "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}");
get('/custom/4', "X-Token: $shared");
get("/custom/5?t=$shared");
get("/custom/6?t=$shared", "X-Token: $xt");
$expected += 6;

# builtin keys off: custom keys only

get("/nobuiltin/1?t=$shared");
get('/nobuiltin/2', "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}",
	'User-Agent: keys-test');
get('/nobuiltin/3', "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}",
	'User-Agent: keys-test');
$expected += 3;

records();

is(join(' ', map { fields("/custom/$_", qw/session_key/) } 1 .. 6),
	'$http_x_token t-label cookie:PHPSESSID $http_x_token t-label '
	. '$http_x_token', 'custom: labels and order');
is(join(' ', map { rec("/custom/$_")->{session_key_builtin} ? 1 : 0 } 1 .. 6),
	'0 0 1 0 0 0', 'custom: builtin flag');
is(rec('/custom/1')->{key_hash}, rec('/custom/2')->{key_hash},
	'custom: header and arg share a value space');
is(rec('/custom/1')->{session_id}, rec('/custom/6')->{session_id},
	'custom: same value, same session');
is(rec('/custom/4')->{session_id}, rec('/custom/5')->{session_id},
	'custom: same value under another label, same session');
is(rec('/custom/3')->{key_hash}, $hash_of{'cookie:PHPSESSID'},
	'custom: built-in used when no custom key has a value');
isnt(rec('/custom/1')->{key_hash}, $hash_of{'cookie:PHPSESSID'},
	'custom: custom key wins over the cookie');

is(rec('/nobuiltin/1')->{key_hash}, rec('/custom/5')->{key_hash},
	'builtin off: custom key, same value space');
is(fields('/nobuiltin/1', 'session_key'), '$arg_t', 'builtin off: label');
ok(!grep({ rec("/nobuiltin/$_")->{session_key} =~ /^(?:cookie:|header:|ip)/ }
	2, 3), 'builtin off: no built-in label');
ok(!grep({ rec("/nobuiltin/$_")->{session_key_builtin} } 2, 3),
	'builtin off: not marked builtin');
ok(!grep({ ($_ // '') eq $hash_of{'cookie:PHPSESSID'} }
	map { rec("/nobuiltin/$_")->{key_hash} } 2, 3),
	'builtin off: cookie not used');
isnt(rec('/nobuiltin/2')->{session_id}, rec('/nobuiltin/3')->{session_id},
	'builtin off: keyless requests are sessions of their own');

###############################################################################

# inheritance: a level that sets a key replaces the list; flows; off

my $s = raw('server');
my $l = raw('loc');

get("/inherit/1?s=$s", { port => 8082 });
get("/own/1?s=$s&l=$l", { port => 8082 });
get("/own/2?s=$s", { port => 8082 });
get("/flows-off/1?s=$s", { port => 8082 });
get("/flows-own/1?s=$s", { port => 8082 });
get('/builtin-off/1', "Cookie: PHPSESSID=$value{'cookie:PHPSESSID'}",
	{ port => 8082 });
get("/builtin-off/2?s=$s", { port => 8082 });
get("/off/1?s=$s", { port => 8082 });
$expected += 7;

records();

is(fields('/inherit/1', 'session_key'), 'server-key', 'inherited key');
is(fields('/own/1', 'session_key'), 'loc-key', 'own key');
is(fields('/own/2', 'session_key'), 'ip',
	'own key list replaces the inherited one');
is(rec('/inherit/1')->{key_hash}, rec('/flows-off/1')->{key_hash},
	'inherited key, same value, same key');
is(fields('/builtin-off/1', 'session_key_builtin'), 0,
	'inherited keys, builtin off: cookie not used');
is(fields('/builtin-off/2', 'session_key'), 'server-key',
	'inherited keys, builtin off: server key');

is_deeply([ map { rec($_)->{flows} } qw{ /inherit/1 /flows-off/1
	/flows-own/1 /own/1 } ], [ ['auth'], [], [ 'billing', 'admin' ],
	['auth'] ], 'flows inherited, off, replaced');
is_deeply(rec('/builtin/ip/1')->{flows}, [], 'no flows configured');

###############################################################################

# $api_session_id and $api_session_key: add_header and proxy_set_header
# see what the record says, for request-side keys

my $vt = raw('var');
my $vc = raw('varcookie');
my $vs = raw('varheader');

my @vars = (
	[ "/vars/1?t=$vt" ],
	[ '/vars/2', "Cookie: sid=$vc" ],
	[ '/vars/3', "X-Session-Token: $vs" ],
	[ '/vars/4', 'User-Agent: vars-agent' ],
	[ '/vars/5' ],
);

my %seen;

for my $i (0 .. $#vars) {
	my ($uri, @h) = @{$vars[$i]};
	my $r = get($uri, @h);
	my $path = $uri =~ s/\?.*//r;
	$seen{$path} = [ http_header($r, 'X-Session-Id'),
		http_header($r, 'X-Session-Key'), http_content($r) ];
}

my $vb = raw('body');
my $r = http_post_json('/vars-body/1', qq|{"user":{"id":"$vb"}}|);
$seen{'/vars-body/1'} = [ http_header($r, 'X-Session-Id'),
	http_header($r, 'X-Session-Key') ];

$expected += @vars + 1;

records();

my (@header_ok, @proxy_ok);

for my $path ((map { "/vars/$_" } 1 .. @vars), '/vars-body/1') {
	my $rec = rec($path);
	my ($id, $key, $echo) = map { $_ // 'undef' } @{$seen{$path}};

	push @header_ok, "$path " . ($id eq ($rec->{session_id} // '')
		&& $key eq ($rec->{session_key} // '') ? 'ok' : "$id $key");
	push @proxy_ok, "$path " . ($echo eq ($rec->{session_id} // '') . '|'
		. ($rec->{session_key} // '') ? 'ok' : $echo)
		if $path =~ m!^/vars/!;
}

is_deeply(\@header_ok, [ map { "$_ ok" } (map { "/vars/$_" } 1 .. @vars),
	'/vars-body/1' ], 'add_header $api_session_id $api_session_key');
is_deeply(\@proxy_ok, [ map { "/vars/$_ ok" } 1 .. @vars ],
	'proxy_set_header $api_session_id $api_session_key');
is(join(' ', map { fields($_, 'session_key') } (map { "/vars/$_" } 1 .. 5),
	'/vars-body/1'), 't cookie:sid header:X-Session-Token ip+ua ip body-id',
	'variables: labels');
like($seen{'/vars/1'}[0] // '', qr/^[0-9a-f]{16,}$/,
	'$api_session_id is hex');

###############################################################################

# stop: exiting workers flush everything; then the whole file is checked

$t->stop();

my $text = $t->read_file('api_sessions.ndjson');
my @all = $t->records();

is(scalar @all, $expected, 'every record, no more');
is(scalar(grep { ($_->{server} // '') eq 'backend'
	|| $_->{path} =~ m!^/(?:login|echo|items|update)\b! } @all), 0,
	'backend not captured');
is(scalar(grep { $_->{path} =~ m!^/off/! } @all), 0, 'api_sessions off');
is(join(' ', grep { index($text, $_) >= 0 } @raw), '',
	'raw key values not exported');
ok(@raw > 20, 'raw values checked');

my %seqs;
push @{$seqs{$_->{pid}}}, $_->{seq} for @all;
is(join(' ', map { my @s = sort { $a <=> $b } @{$seqs{$_}};
	"@s" eq join(' ', 1 .. @s) ? 'ok' : "$_: @s" } sort keys %seqs),
	join(' ', ('ok') x keys %seqs), 'seq from 1 without gaps per worker');
is(scalar keys %seqs, 2, 'both workers wrote records');

###############################################################################
