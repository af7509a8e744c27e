#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module, configuration validation: every
# directive with bad values fails "nginx -t" with the exact
# [emerg] line, and good configurations pass.

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

my $t = Test::Nginx->new()->has(qw/http map limit_req api_sessions/);

# Each case fills the @MAIN@, @HTTP@, @SERVER@ and @LOCATION@ slots; the line
# an [emerg] must name is marked "#!" (a comment, so nginx ignores it).
my $template = <<'EOF';

%%TEST_GLOBALS%%

@MAIN@

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    @HTTP@

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        @SERVER@

        location / {
            @LOCATION@
        }
    }
}

EOF

my $dir = $t->testdir();

$t->write_file('secret', 'k' x 32);
$t->write_file('secret_nl', ('s' x 32) . "\n");
$t->write_file('secret_short', ('s' x 31) . "\n");
$t->write_file('secret_empty', '');

# CPUs this machine has, for the message of a cpu= it lacks.
chomp(my $ncpu = `getconf _NPROCESSORS_CONF`);

my @cases = (

	# api_sessions, api_sessions_builtin_keys: nginx's flag slot

	[ 'api_sessions bad flag',
		location => 'api_sessions x; #!',
		'invalid value "x" in "api_sessions" directive, '
		. 'it must be "on" or "off"' ],
	[ 'api_sessions no argument',
		location => 'api_sessions; #!',
		'invalid number of arguments in "api_sessions" directive' ],
	[ 'api_sessions duplicate',
		server => "api_sessions on;\n api_sessions off; #!",
		'"api_sessions" directive is duplicate' ],
	[ 'api_sessions_builtin_keys bad flag',
		http => 'api_sessions_builtin_keys yes; #!',
		'invalid value "yes" in "api_sessions_builtin_keys" directive, '
		. 'it must be "on" or "off"' ],
	[ 'api_sessions_builtin_keys duplicate',
		location => "api_sessions_builtin_keys on;\n"
			. "api_sessions_builtin_keys off; #!",
		'"api_sessions_builtin_keys" directive is duplicate' ],

	# api_sessions_key

	[ 'key constant',
		server => 'api_sessions_key token; #!',
		'invalid source "token", it must contain a variable or be '
		. '"request_body:POINTER" or "response_body:POINTER"' ],
	[ 'key request_body pointer without slash',
		server => 'api_sessions_key request_body:hash/token; #!',
		'invalid JSON pointer "hash/token", it must start with "/"' ],
	[ 'key response_body pointer bad escape',
		location => 'api_sessions_key response_body:/a~2b; #!',
		'invalid JSON pointer "/a~2b", "~" must be followed by "0" or "1"' ],
	[ 'key pointer trailing tilde',
		location => 'api_sessions_key request_body:/a~; #!',
		'invalid JSON pointer "/a~", "~" must be followed by "0" or "1"' ],
	[ 'key empty name',
		location => 'api_sessions_key $arg_token name=; #!',
		'invalid parameter "name="' ],
	[ 'key unknown option',
		location => 'api_sessions_key $arg_token label=token; #!',
		'invalid parameter "label=token"' ],
	[ 'key too many arguments',
		location => 'api_sessions_key $arg_token name=a name=b; #!',
		'invalid number of arguments in "api_sessions_key" directive' ],
	[ 'key no argument',
		http => 'api_sessions_key; #!',
		'invalid number of arguments in "api_sessions_key" directive' ],
	[ 'key bad variable syntax',
		location => 'api_sessions_key "${arg_token"; #!',
		'the closing bracket in "arg_token" variable is missing' ],

	# api_sessions_param

	[ 'param bad type',
		location => 'api_sessions_param $arg_u type=admin; #!',
		'invalid parameter "type=admin"' ],
	[ 'param empty type',
		location => 'api_sessions_param $arg_u type=; #!',
		'invalid parameter "type="' ],
	[ 'param unknown option',
		location => 'api_sessions_param $arg_u secret; #!',
		'invalid parameter "secret"' ],
	[ 'param repeated type',
		location => 'api_sessions_param $arg_u type=user type=role; #!',
		'invalid parameter "type=role"' ],
	[ 'param empty name',
		server => 'api_sessions_param $arg_u name= type=user; #!',
		'invalid parameter "name="' ],
	[ 'param constant',
		server => 'api_sessions_param user; #!',
		'invalid source "user", it must contain a variable or be '
		. '"request_body:POINTER" or "response_body:POINTER"' ],
	[ 'param bad pointer',
		server => 'api_sessions_param response_body:user/role; #!',
		'invalid JSON pointer "user/role", it must start with "/"' ],
	[ 'param no argument',
		server => 'api_sessions_param; #!',
		'invalid number of arguments in "api_sessions_param" directive' ],

	# api_sessions_flow

	[ 'flow bad word',
		location => 'api_sessions_flow auth "bad word"; #!',
		'invalid value "bad word"' ],
	[ 'flow bad character',
		location => 'api_sessions_flow "billing/x"; #!',
		'invalid value "billing/x"' ],
	[ 'flow off among flows',
		location => 'api_sessions_flow auth off; #!',
		'invalid value "off"' ],
	[ 'flow duplicate',
		location => "api_sessions_flow auth;\n api_sessions_flow admin; #!",
		'"api_sessions_flow" directive is duplicate' ],
	[ 'flow off duplicate',
		server => "api_sessions_flow off;\n api_sessions_flow auth; #!",
		'"api_sessions_flow" directive is duplicate' ],

	# api_sessions_attack

	[ 'attack bad variable syntax',
		location => 'api_sessions_attack "${attack"; #!',
		'the closing bracket in "attack" variable is missing' ],
	[ 'attack empty variable name',
		location => 'api_sessions_attack "x$"; #!',
		'invalid variable name' ],
	[ 'attack duplicate',
		location => "api_sessions_attack \$arg_a;\n"
			. "api_sessions_attack \$arg_b; #!",
		'"api_sessions_attack" directive is duplicate' ],
	[ 'attack two arguments',
		location => 'api_sessions_attack $arg_a $arg_b; #!',
		'invalid number of arguments in "api_sessions_attack" directive' ],

	# api_sessions_mask

	[ 'mask unknown kind',
		location => 'api_sessions_mask cookie:sid; #!',
		'invalid parameter "cookie:sid"' ],
	[ 'mask empty header name',
		server => 'api_sessions_mask header:X-Key header:; #!',
		'invalid parameter "header:"' ],
	[ 'mask bad header name',
		location => 'api_sessions_mask "header:X Key"; #!',
		'invalid parameter "header:X Key"' ],
	[ 'mask bad arg name',
		http => 'api_sessions_mask arg:a=b; #!',
		'invalid parameter "arg:a=b"' ],
	[ 'mask pointer without slash',
		location => 'api_sessions_mask body:password; #!',
		'invalid JSON pointer "password", it must start with "/"' ],
	[ 'mask pointer bad escape',
		location => 'api_sessions_mask arg:code body:/a~x; #!',
		'invalid JSON pointer "/a~x", "~" must be followed by "0" or "1"' ],
	[ 'mask no argument',
		location => 'api_sessions_mask; #!',
		'invalid number of arguments in "api_sessions_mask" directive' ],

	# api_sessions_body_limit: nginx's size slot

	[ 'body_limit bad size',
		location => 'api_sessions_body_limit 10q; #!',
		'"api_sessions_body_limit" directive invalid value' ],
	[ 'body_limit duplicate',
		server => "api_sessions_body_limit 1k;\n"
			. "api_sessions_body_limit 2k; #!",
		'"api_sessions_body_limit" directive is duplicate' ],

	# unknown variables, reported when variables are resolved

	[ 'key unknown variable',
		location => 'api_sessions_key $api_sessions_no_such_key;',
		undef, 'unknown "api_sessions_no_such_key" variable' ],
	[ 'param unknown variable',
		server => 'api_sessions_param $no_such_param type=user;',
		undef, 'unknown "no_such_param" variable' ],
	[ 'attack unknown variable',
		http => 'api_sessions_attack $no_such_attack;',
		undef, 'unknown "no_such_attack" variable' ],

	# api_sessions_zone

	[ 'zone in server',
		server => 'api_sessions_zone zone=a:1m; #!',
		'"api_sessions_zone" directive is not allowed here' ],
	[ 'zone in location',
		location => 'api_sessions_zone zone=a:1m; #!',
		'"api_sessions_zone" directive is not allowed here' ],
	[ 'zone duplicate',
		http => "api_sessions_zone zone=a:1m;\n"
			. "api_sessions_zone zone=b:1m; #!",
		'"api_sessions_zone" directive is duplicate' ],
	[ 'zone without zone=',
		http => 'api_sessions_zone idle=10m; #!',
		'"api_sessions_zone" must have "zone" parameter' ],
	[ 'zone bad size',
		http => 'api_sessions_zone zone=a:x; #!',
		'invalid zone size "zone=a:x"' ],
	[ 'zone without size',
		http => 'api_sessions_zone zone=a; #!',
		'invalid zone size "zone=a"' ],
	[ 'zone too small',
		http => 'api_sessions_zone zone=a:1k; #!',
		'zone "a" is too small' ],
	[ 'zone bad idle',
		http => 'api_sessions_zone zone=a:1m idle=often; #!',
		'invalid parameter "idle=often"' ],
	[ 'zone zero idle',
		http => 'api_sessions_zone zone=a:1m idle=0; #!',
		'invalid parameter "idle=0"' ],
	[ 'zone bad max',
		http => 'api_sessions_zone zone=a:1m max=1x; #!',
		'invalid parameter "max=1x"' ],
	[ 'zone unknown parameter',
		http => 'api_sessions_zone zone=a:1m ttl=1h; #!',
		'invalid parameter "ttl=1h"' ],
	[ 'zone name taken by another module',
		http => "limit_req_zone \$binary_remote_addr zone=a:1m rate=1r/s;\n"
			. "api_sessions_zone zone=a:1m; #!",
		'the shared memory zone "a" is already declared '
		. 'for a different use' ],

	# api_sessions_secret

	[ 'secret in server',
		server => "api_sessions_secret $dir/secret; #!",
		'"api_sessions_secret" directive is not allowed here' ],
	[ 'secret duplicate',
		http => "api_sessions_secret secret;\n"
			. "api_sessions_secret secret_nl; #!",
		'"api_sessions_secret" directive is duplicate' ],
	[ 'secret too short',
		http => 'api_sessions_secret secret_short; #!',
		'"%%TESTDIR%%/secret_short" must be at least 32 bytes' ],
	[ 'secret empty',
		http => 'api_sessions_secret secret_empty; #!',
		'"%%TESTDIR%%/secret_empty" must be at least 32 bytes' ],
	[ 'secret file missing',
		http => 'api_sessions_secret no_such_secret; #!',
		'cannot read secret file "%%TESTDIR%%/no_such_secret" '
		. '(2: No such file or directory)' ],
	[ 'hash without secret',
		location => 'api_sessions_param $arg_p hash; #!',
		'the "hash" parameter of "api_sessions_param" requires '
		. '"api_sessions_secret"' ],

	# api_sessions_export

	[ 'export in server',
		server => 'api_sessions_export file=logs/x.ndjson; #!',
		'"api_sessions_export" directive is not allowed here' ],
	[ 'export duplicate',
		http => "api_sessions_export file=logs/a.ndjson;\n"
			. "api_sessions_export file=logs/b.ndjson; #!",
		'"api_sessions_export" directive is duplicate' ],
	[ 'export without file or url',
		http => 'api_sessions_export batch=10 flush=1s; #!',
		'"api_sessions_export" must have "file" or "url" parameter' ],
	[ 'export empty file',
		http => 'api_sessions_export file=; #!',
		'invalid parameter "file="' ],
	[ 'export file and url',
		http => 'api_sessions_export file=logs/a.ndjson '
			. 'url=http://127.0.0.1/v1/records; #!',
		'invalid parameter "url=http://127.0.0.1/v1/records"' ],
	[ 'export bad url scheme',
		http => 'api_sessions_export url=ftp://127.0.0.1/records; #!',
		'invalid URL prefix in "ftp://127.0.0.1/records"' ],
	[ 'export url without scheme',
		http => 'api_sessions_export url=127.0.0.1:8707; #!',
		'invalid URL prefix in "127.0.0.1:8707"' ],
	[ 'export url without host',
		http => 'api_sessions_export url=http://; #!',
		'no host in "http://"' ],
	[ 'export url with bad port',
		http => 'api_sessions_export url=http://127.0.0.1:port/v1; #!',
		'invalid port in "http://127.0.0.1:port/v1"' ],
	[ 'export unknown parameter',
		http => 'api_sessions_export file=logs/a.ndjson gzip=on; #!',
		'invalid parameter "gzip=on"' ],
	[ 'export bad cpu',
		http => 'api_sessions_export file=logs/a.ndjson cpu=two; #!',
		'invalid CPU list in "cpu=two"' ],
	[ 'export inverted cpu range',
		http => 'api_sessions_export file=logs/a.ndjson cpu=3-2; #!',
		'invalid CPU range in "cpu=3-2"' ],
	[ 'export cpu the machine lacks',
		http => 'api_sessions_export file=logs/a.ndjson cpu=0,1023; #!',
		"no CPU 1023 on this machine of $ncpu CPUs in \"cpu=0,1023\"" ],
	[ 'export cpu twice',
		http => 'api_sessions_export file=logs/a.ndjson cpu=0 cpu=1; #!',
		'invalid parameter "cpu=1"' ],
	[ 'export bad batch',
		http => 'api_sessions_export file=logs/a.ndjson batch=many; #!',
		'invalid parameter "batch=many"' ],
	[ 'export zero batch',
		http => 'api_sessions_export file=logs/a.ndjson batch=0; #!',
		'invalid parameter "batch=0"' ],
	[ 'export bad flush',
		http => 'api_sessions_export file=logs/a.ndjson flush=soon; #!',
		'invalid parameter "flush=soon"' ],
	[ 'export bad queue',
		http => 'api_sessions_export file=logs/a.ndjson queue=-1; #!',
		'invalid parameter "queue=-1"' ],
	[ 'export bad timeout',
		http => 'api_sessions_export url=http://127.0.0.1:1/v1/records '
			. 'timeout=1y2; #!',
		'invalid parameter "timeout=1y2"' ],
	[ 'export bad spool_max',
		http => 'api_sessions_export url=http://127.0.0.1:1/v1/records '
			. 'spool=spool spool_max=big; #!',
		'invalid parameter "spool_max=big"' ],
	[ 'export header without colon',
		http => 'api_sessions_export url=http://127.0.0.1:1/v1/records '
			. 'header=Authorization; #!',
		'invalid parameter "header=Authorization"' ],
	[ 'export header bad name',
		http => 'api_sessions_export url=http://127.0.0.1:1/v1/records '
			. '"header=X Token:1"; #!',
		'invalid parameter "header=X Token:1"' ],
	[ 'export spool without url',
		http => 'api_sessions_export file=logs/a.ndjson spool=spool; #!',
		'"spool" requires "url"' ],
	[ 'export header without url',
		http => 'api_sessions_export file=logs/a.ndjson header=X-A:1; #!',
		'"header" requires "url"' ],

	# api_sessions_node

	[ 'node in location',
		location => 'api_sessions_node web-1; #!',
		'"api_sessions_node" directive is not allowed here' ],
	[ 'node duplicate',
		http => "api_sessions_node web-1;\n api_sessions_node web-2; #!",
		'"api_sessions_node" directive is duplicate' ],
	[ 'node empty',
		http => 'api_sessions_node ""; #!',
		'invalid value ""' ],

	# api_sessions_denylist, api_sessions_block, api_sessions_block_status

	[ 'denylist in server',
		server => 'api_sessions_denylist zone=d:1m file=deny.json; #!',
		'"api_sessions_denylist" directive is not allowed here' ],
	[ 'denylist duplicate',
		http => "api_sessions_denylist zone=d:1m file=deny.json;\n"
			. 'api_sessions_denylist zone=e:1m file=deny.json; #!',
		'"api_sessions_denylist" directive is duplicate' ],
	[ 'denylist without zone',
		http => 'api_sessions_denylist file=deny.json; #!',
		'"api_sessions_denylist" must have "zone" parameter' ],
	[ 'denylist without source',
		http => 'api_sessions_denylist zone=d:1m interval=1s; #!',
		'"api_sessions_denylist" must have "url" or "file" parameter' ],
	[ 'denylist bad zone size',
		http => 'api_sessions_denylist zone=d:big file=deny.json; #!',
		'invalid zone size "zone=d:big"' ],
	[ 'denylist zone too small',
		http => 'api_sessions_denylist zone=d:1k file=deny.json; #!',
		'zone "d" is too small' ],
	[ 'denylist url and file',
		http => 'api_sessions_denylist zone=d:1m file=deny.json '
			. 'url=http://127.0.0.1/v1/denylist; #!',
		'invalid parameter "url=http://127.0.0.1/v1/denylist"' ],
	[ 'denylist bad url',
		http => 'api_sessions_denylist zone=d:1m url=ftp://h/d; #!',
		'invalid URL prefix in "ftp://h/d"' ],
	[ 'denylist bad interval',
		http => 'api_sessions_denylist zone=d:1m file=deny.json '
			. 'interval=often; #!',
		'invalid parameter "interval=often"' ],
	[ 'denylist header with file',
		http => 'api_sessions_denylist zone=d:1m file=deny.json '
			. 'header=X-A:1; #!',
		'"header" requires "url"' ],
	[ 'denylist zone shared with sessions',
		http => "api_sessions_zone zone=a:1m;\n"
			. 'api_sessions_denylist zone=a:1m file=deny.json; #!',
		'duplicate zone "a"' ],
	[ 'block bad value',
		location => 'api_sessions_block yes; #!',
		'invalid value "yes"' ],
	[ 'block without denylist',
		location => "api_sessions on;\n api_sessions_block on;", undef,
		'"api_sessions_block" requires "api_sessions_denylist"' ],
	[ 'block status too low',
		location => 'api_sessions_block_status 200; #!',
		'value must be between 400 and 599' ],
	[ 'block status too high',
		location => 'api_sessions_block_status 600; #!',
		'value must be between 400 and 599' ],
	[ 'block status not a number',
		location => 'api_sessions_block_status forbidden; #!',
		'"api_sessions_block_status" directive invalid number' ],

	# api_sessions_status

	[ 'status in server',
		server => 'api_sessions_status; #!',
		'"api_sessions_status" directive is not allowed here' ],
	[ 'status with argument',
		location => 'api_sessions_status json; #!',
		'invalid number of arguments in "api_sessions_status" directive' ],
);

# Good configurations: every directive, every parameter form.
my @good = (
	[ 'every directive', main => 'worker_processes 2;', http => <<"EOF",
api_sessions_secret secret;
api_sessions_zone zone=sessions:1m idle=30m max=24h;
api_sessions_export file=logs/api_sessions.ndjson batch=512 flush=1s
                    queue=65536 timeout=5s cpu=0;
api_sessions_node web-1;
api_sessions_builtin_keys on;
api_sessions_body_limit 64k;
map \$status \$attack { 403 blocked; default ""; }
api_sessions_attack \$attack;
api_sessions_flow auth account_creation account_management admin billing
                  sms_gateway ai_llm my-flow.v2;
EOF
		server => <<'EOF',
api_sessions on;
api_sessions_key response_body:/hash/token name=token;
api_sessions_key $arg_token name=token;
api_sessions_key request_body:/hash/token name=token;
api_sessions_key ${cookie_sid}-$http_x_tenant;
api_sessions_param $http_x_user type=user name=user;
api_sessions_param response_body:/user/role type=role;
api_sessions_param request_body:/password hash name=password;
api_sessions_param request_body:/variables/id type=context;
api_sessions_param request_body:/operation;
api_sessions_param response_body:/a~1b/~0c/0 name=escaped;
api_sessions_param $sent_http_x_token hash type=user name=x;
api_sessions_mask header:Proxy-Authorization;
EOF
		location => <<'EOF' ],
api_sessions_mask header:X-Api-Key arg:code;
api_sessions_mask body:/card/number body:/a~1b body:;
api_sessions_key $http_x_session name=sess;
api_sessions_builtin_keys off;
api_sessions_flow off;
api_sessions_body_limit 1m;
EOF
	[ 'url export, secret with newline',
		http => "api_sessions_secret secret_nl;\n"
			. 'api_sessions_export url=https://collector.example/v1/records '
			. 'batch=100 flush=250ms queue=1024 spool=spool spool_max=2g '
			. '"header=Authorization:Bearer t" header=X-Node:web-1 '
			. "timeout=3s;\n"
			. "api_sessions_zone zone=s:32k;\n",
		location => "api_sessions on;\n api_sessions_status;\n" ],
	[ 'denylist and blocking',
		http => 'api_sessions_denylist zone=deny:1m interval=500ms '
			. 'url=https://explorer.example/v1/denylist '
			. '"header=Authorization:Bearer t";',
		server => "api_sessions on;\n api_sessions_block dry_run;\n"
			. 'api_sessions_block_status 429;',
		location => "api_sessions_block on;\n api_sessions_block_status 451;" ],
	[ 'denylist from a file, blocking off',
		http => 'api_sessions_denylist zone=deny:64k file=deny.json;',
		location => "api_sessions on;\n api_sessions_block off;" ],
	[ 'module loaded, nothing enabled', location => 'return 204;' ],
	[ 'off in a location',
		http => 'api_sessions on;',
		location => "api_sessions off;\n api_sessions_flow off;" ],
);

$t->plan(scalar(@cases) + 2 * scalar(@good));

###############################################################################

sub conf {
	my (%slots) = @_;

	my $conf = $template;

	for my $slot (qw/ MAIN HTTP SERVER LOCATION /) {
		my $text = $slots{lc $slot} // '';
		$conf =~ s/\@$slot\@/$text/;
	}

	return $conf;
}

sub case_name {
	my ($name) = @_;
	(my $file = $name) =~ s/[^a-z0-9]+/_/gi;
	return "$file.conf";
}

for my $case (@cases) {
	my ($name, $slot, $snippet, @expect) = @$case;

	my $file = case_name($name);
	my ($status, $output) = $t->run_config_test(conf($slot => $snippet),
		name => $file);

	# "#!": the line the [emerg] names; "#http}": the end of the http
	# block (errors found once it is parsed); undef: no file position
	my $where = @expect > 1 ? shift @expect : '#!';
	my $message = $expect[0];
	my $expect = "[emerg] $message";

	if (defined $where) {
		my @lines = split /\n/, $t->read_file($file);
		my $line;

		if ($where eq '#http}') {
			# the closing brace of the http block: the last "}"
			# before the end
			$line = (grep { $lines[$_ - 1] =~ /^}\s*$/ } 1 .. @lines)[-1];
		} else {
			($line) = grep { $lines[$_ - 1] =~ /#!/ } 1 .. @lines;
		}

		$expect .= " in %%TESTDIR%%/$file:$line";
	}

	is_deeply([ $status ? 'failed' : 'passed', $t->emerg_lines($output) ],
		[ 'failed', $expect ], $name)
		or diag($output);
}

for my $case (@good) {
	my ($name, %slots) = @$case;

	my $file = case_name($name);
	my ($status, $output) = $t->run_config_test(conf(%slots), name => $file);

	is($status, 0, "good: $name") or diag($output);
	is(join("\n", $t->emerg_lines($output)), '', "good: $name, no [emerg]");
}

###############################################################################
