;;; test-ob-chat-ai-tools.el --- ERT tests for the document's blocks as tools  -*- lexical-binding: t; -*-

;;; Commentary:

;; Real chat-ai blocks with :tools, run through the real helper against
;; the loopback server, whose tool-… models call the tools offered; the
;; tests check what the server received and what the result records.
;; Load after tests/test-ob-chat-ai.el.

;;; Code:

(require 'ert)
(require 'cl-lib)
(unless (featurep 'test-ob-chat-ai)
  (load (expand-file-name "test-ob-chat-ai.el"
                          (file-name-directory (or load-file-name buffer-file-name)))
        nil t))

(defconst ob-chat-ai-test-tool-blocks
  "Look up the price of an item,
in euros.

#+name: lookup-price
#+begin_src emacs-lisp :var item=\"pear\" :var count=2
(format \"%s costs %s\" item (* count 1.5))
#+end_src

#+name: prices
| apple | 1 |
| pear  | 2 |

#+caption: Count the stock of the items in a table.
#+name: stock_count
#+begin_src emacs-lisp :var rows=prices :var label=\"stock\"
(format \"%s: %d rows\" label (length rows))
#+end_src

#+name: broken
#+begin_src emacs-lisp :var item=\"x\"
(error \"No price for %s\" item)
#+end_src

#+name: tricky
#+begin_src emacs-lisp :var item=\"x\"
(concat \"* \" item \"\\n#+end_tool\\n:end:\\n,#+kept\\n\")
#+end_src
"
  "Tool blocks for the tests: a paragraph, a caption, a table default, an error.")

(defun ob-chat-ai-test-tools-doc (header-args prompt)
  "Return a document with the tool blocks and a chat-ai block of HEADER-ARGS.
Its body is PROMPT."
  (format "#+begin_src chat-ai %s\n%s\n#+end_src\n\n%s"
          header-args prompt ob-chat-ai-test-tool-blocks))

(defun ob-chat-ai-test-tools-result ()
  "Return the text of the buffer from the first #+RESULTS: line to the tool blocks."
  (let ((text (buffer-string)))
    (substring text (string-search "#+RESULTS" text)
               (string-search "Look up the price" text))))

(ert-deftest ob-chat-ai-test-tools-array-sent-from-the-blocks ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model m :tools lookup-price stock_count" "hi")
    (ob-chat-ai-test-run)
    (let ((tools (alist-get 'tools (ob-chat-ai-test-body))))
      (should (equal
               tools
               [((type . "function")
                 (function
                  (name . "lookup-price")
                  (description . "Look up the price of an item,\nin euros.")
                  (parameters (type . "object")
                              (properties (item (type . "string"))
                                          (count (type . "number"))))))
                ((type . "function")
                 (function
                  (name . "stock_count")
                  (description . "Count the stock of the items in a table.")
                  (parameters
                   (type . "object")
                   (properties
                    (rows (type . "array")
                          (items (type . "array")
                                 (items (type . ["string" "number"]))))
                    (label (type . "string"))))))])))))

(ert-deftest ob-chat-ai-test-tools-from-a-property-and-shown-by-dry-run ()
  (ob-chat-ai-test-with-org
      (concat "#+PROPERTY: header-args:chat-ai :tools lookup-price\n"
              (ob-chat-ai-test-tools-doc ":model m :dry-run yes" "hi"))
    (org-mode-restart)
    (let ((preview (ob-chat-ai-test-run)))
      (should (string-match-p "\"tools\": \\[" preview))
      (should (string-match-p "\"name\": \"lookup-price\"" preview)))
    (goto-char (point-min))
    (re-search-forward "^#\\+begin_src chat-ai")
    (let ((expanded (org-babel-expand-body:chat-ai
                     "hi" (nth 2 (org-babel-get-src-block-info)))))
      (should (string-prefix-p "hi\n\n[tools]\n[{\"type\":\"function\"" expanded))
      (should (string-search "\"name\":\"lookup-price\"" expanded)))
    (should-not (ob-chat-ai-test-received))))

(ert-deftest ob-chat-ai-test-tools-cache-keeps-the-whole-exchange ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-call :tools lookup-price :cache yes"
                                 "{\"item\": \"kiwi\"}")
    (let ((ob-chat-ai-confirm-tools nil))
      (ob-chat-ai-test-run)
      (let ((first (ob-chat-ai-test-tools-result)))
        (should (string-search "Tool results: kiwi costs 3.0" first))
        (should (string-match-p "\\`#\\+RESULTS\\[[0-9a-f]+\\]:" first))
        (ob-chat-ai-test-run)
        (should (equal (ob-chat-ai-test-tools-result) first))))
    (should (= (length (ob-chat-ai-test-received)) 2))))

(ert-deftest ob-chat-ai-test-tools-bad-names-are-one-line ()
  (ob-chat-ai-test-with-org
      (concat (ob-chat-ai-test-tools-doc ":model m :tools no-such-block" "hi")
              "#+name: bad name!\n#+begin_src emacs-lisp\n1\n#+end_src\n")
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :tools names no-such-block, but no source block has \
#+name: no-such-block"))
    (goto-char (point-min))
    (re-search-forward ":tools no-such-block")
    (replace-match ":tools bad name!")
    (let ((message (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))
      (should (string-match-p "\\`chat-ai: :tools names bad\\|Tool block bad" message))
      (should-not (string-search "\n" message)))
    (should-not (ob-chat-ai-test-received))))

(ert-deftest ob-chat-ai-test-tools-a-long-name-is-refused-naming-the-block ()
  (let ((name (make-string 65 ?x)))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :tools %s\nhi\n#+end_src\n\n\
#+name: %s\n#+begin_src emacs-lisp\n1\n#+end_src\n" name name)
      (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                     (format "chat-ai: Tool block %s cannot be offered: the API takes \
names of 1 to 64 letters, digits, _ and - only" name)))
      (should-not (ob-chat-ai-test-received)))))

(defun ob-chat-ai-test-tool-exchange (header-args prompt)
  "Run a chat-ai block of HEADER-ARGS and PROMPT whose tools run unasked.
Return the requests the server received."
  (let ((ob-chat-ai-confirm-tools nil))
    (ob-chat-ai-test-run))
  (ignore header-args prompt)
  (ob-chat-ai-test-received))

(ert-deftest ob-chat-ai-test-tools-a-streamed-call-runs-the-block ()
  (dolist (stream '("yes" "no"))
    (ob-chat-ai-test-with-org
        (ob-chat-ai-test-tools-doc
         (format ":model tool-call :tools lookup-price :stream %s" stream)
         "{\"item\": \"apple é\"}")
      (let* ((requests (ob-chat-ai-test-tool-exchange nil nil))
             (messages (alist-get 'messages (alist-get 'body (nth 1 requests)))))
        (should (= (length requests) 2))
        (should (equal (seq-drop messages 1)
                       [((role . "assistant")
                         (content)
                         (tool_calls . [((id . "call_0_0") (type . "function")
                                         (function
                                          (name . "lookup-price")
                                          (arguments . "{\"item\": \"apple \\u00e9\"}")))]))
                        ((role . "tool") (tool_call_id . "call_0_0")
                         (content . "apple é costs 3.0"))]))
        (should (string-search
                 ": #+begin_tool lookup-price {\"item\": \"apple \\u00e9\"} :id call_0_0 :round 1
: apple é costs 3.0
: #+end_tool
: Tool results: apple é costs 3.0"
                 (ob-chat-ai-test-tools-result)))
        (should (string-search "Tool results: apple é costs 3.0"
                               (ob-chat-ai-test-tools-result)))))))

(ert-deftest ob-chat-ai-test-tools-two-calls-in-one-turn-and-a-table ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc
       ":model tool-two :tools lookup-price stock_count :results drawer"
       "{\"label\": \"left\"}")
    (let* ((ob-chat-ai-confirm-tools nil)
           (requests (progn (ob-chat-ai-test-run) (ob-chat-ai-test-received)))
           (messages (alist-get 'messages (alist-get 'body (nth 1 requests)))))
      (should (= (length requests) 2))
      ;; lookup-price has no parameter label: the error goes to the model.
      (should (equal (mapcar (lambda (m) (alist-get 'content m)) (seq-drop messages 2))
                     '("Error: The block lookup-price has no parameter label; its \
parameters are: item, count"
                       "left: 2 rows")))
      (should (string-search "Tool results: Error: The block lookup-price has no \
parameter label; its parameters are: item, count | left: 2 rows"
                             (buffer-string)))
      (should (string-match-p
               ":results:\n#\\+begin_tool lookup-price .*:round 1\n.*\n#\\+end_tool
#\\+begin_tool stock_count .*:round 1\nleft: 2 rows\n#\\+end_tool\nTool results"
               (buffer-string)))
      ;; Each record is folded; the answer shows.
      (dolist (name '("lookup-price" "stock_count"))
        (goto-char (point-min))
        (search-forward (concat "#+begin_tool " name))
        (should-not (invisible-p (line-beginning-position)))
        (forward-line)
        (should (invisible-p (point))))
      (search-forward "Tool results")
      (should-not (invisible-p (point))))))

(ert-deftest ob-chat-ai-test-tools-a-failing-tool-sends-its-error ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-call :tools broken" "{\"item\": \"gold\"}")
    (ob-chat-ai-test-tool-exchange nil nil)
    (should (string-search "Tool results: Error: No price for gold"
                           (ob-chat-ai-test-tools-result)))))

(ert-deftest ob-chat-ai-test-tools-a-block-not-offered-never-runs ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-other-broken :tools lookup-price"
                                 "{\"item\": \"gold\"}")
    (let ((requests (ob-chat-ai-test-tool-exchange nil nil)))
      (should (= (length requests) 2))
      (should (string-search
               "Tool results: Error: this block offers no tool broken; it offers: lookup-price"
               (ob-chat-ai-test-tools-result)))
      (should-not (string-search "No price for gold" (ob-chat-ai-test-tools-result))))))

(ert-deftest ob-chat-ai-test-tools-a-record-keeps-what-the-model-sent-on-its-line ()
  (let* ((call '((name . "x\n* Heading") (call_id . "c 1\n#+end_tool")
                 (arguments . "{}\r\n:end:")))
         (record (ob-chat-ai-reply-tool-block 1 call "v")))
    (should (equal record "#+begin_tool x_*_Heading {} :end: :id c_1_#+end_tool \
:round 1\nv\n#+end_tool\n"))
    (should (equal (ob-chat-ai-reply-tool-records record)
                   '((1 ((call_id . "c_1_#+end_tool") (name . "x_*_Heading")
                         (arguments . "{} :end:"))
                        "v"))))))

(ert-deftest ob-chat-ai-test-tools-a-block-that-calls-itself-stops ()
  (ob-chat-ai-test-with-org
      (concat "#+name: me\n"
              (ob-chat-ai-test-tools-doc ":model tool-call :tools me" "hi"))
    (let ((requests (ob-chat-ai-test-tool-exchange nil nil)))
      (should (= (length requests) 4))
      (should (string-search
               "\nError: The block me is running already: a tool block cannot \
call itself, directly or through other tools\n"
               (ob-chat-ai-test-tools-result))))))

(ert-deftest ob-chat-ai-test-tools-declined-goes-back-to-the-model ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-call :tools lookup-price :async no"
                                 "{\"item\": \"apple\"}")
    (let ((ob-chat-ai-confirm-tools t)
          (noninteractive nil)
          (asked nil))
      (cl-letf (((symbol-function 'read-multiple-choice)
                 (lambda (prompt choices &rest _)
                   (push prompt asked)
                   (assq ?n choices))))
        (ob-chat-ai-test-run))
      (should (equal asked '("chat-ai: run tool lookup-price {\"item\": \"apple\"}? "))))
    (should (string-search "Tool results: The user declined to run this tool."
                           (ob-chat-ai-test-tools-result)))))

(ert-deftest ob-chat-ai-test-tools-batch-with-confirmation-runs-nothing ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-call :tools broken" "{\"item\": \"gold\"}")
    (let ((ob-chat-ai-confirm-tools t))
      (ob-chat-ai-test-run))
    (should (= (length (ob-chat-ai-test-received)) 1))
    (should (string-search "batch Emacs cannot confirm tool calls \
(ob-chat-ai-confirm-tools), so none ran"
                           (ob-chat-ai-test-tools-result)))
    (should-not (string-search "No price" (ob-chat-ai-test-tools-result)))))

(ert-deftest ob-chat-ai-test-tools-the-round-limit-ends-with-one-line ()
  (ob-chat-ai-test-with-org
      (ob-chat-ai-test-tools-doc ":model tool-loop :tools lookup-price :max-tool-rounds 2"
                                 "{}")
    (let ((requests (ob-chat-ai-test-tool-exchange nil nil)))
      (should (= (length requests) 3)))
    (should (string-search "[chat-ai: the model still asked for tools after 2 rounds \
(:max-tool-rounds); stopped]"
                           (ob-chat-ai-test-tools-result)))))

(ert-deftest ob-chat-ai-test-tools-a-session-replays-the-calls ()
  (ob-chat-ai-test-with-org
      (concat (ob-chat-ai-test-tools-doc
               ":model tool-call :session s :tools lookup-price :stream no"
               "{\"item\": \"fig\"}")
              "\n#+begin_src chat-ai :model m :session s\nAnd now?\n#+end_src\n")
    (ob-chat-ai-test-tool-exchange nil nil)
    (let ((first (alist-get 'messages
                            (ob-chat-ai-test-body (nth 1 (ob-chat-ai-test-received 2))))))
      (goto-char (point-max))
      (re-search-backward "^#\\+begin_src chat-ai :model m")
      (org-babel-execute-src-block)
      (let ((sent (alist-get 'messages (ob-chat-ai-test-body
                                         (nth 2 (ob-chat-ai-test-received 3))))))
        (should (equal (seq-take sent (length first)) first))
        (should (equal (seq-drop sent (length first))
                       [((role . "assistant") (content . "Tool results: fig costs 3.0"))
                        ((role . "user") (content . "And now?"))]))))))

(ert-deftest ob-chat-ai-test-tools-a-session-replays-every-round ()
  (ob-chat-ai-test-with-org
      (concat (ob-chat-ai-test-tools-doc
               ":model tool-loop :session s :tools lookup-price :max-tool-rounds 2"
               "{\"item\": \"fig\"}")
              "\n#+begin_src chat-ai :model m :session s\nAnd now?\n#+end_src\n")
    (ob-chat-ai-test-tool-exchange nil nil)
    (let ((last (alist-get 'messages (ob-chat-ai-test-body
                                      (nth 2 (ob-chat-ai-test-received 3))))))
      (should (= (length last) 5))
      (goto-char (point-max))
      (re-search-backward "^#\\+begin_src chat-ai :model m")
      (org-babel-execute-src-block)
      (should (equal (alist-get 'messages (ob-chat-ai-test-body
                                           (nth 3 (ob-chat-ai-test-received 4))))
                     (vconcat last '(((role . "user") (content . "And now?")))))))))

(ert-deftest ob-chat-ai-test-tools-a-value-stays-inside-its-record-and-replays-exactly ()
  (dolist (results '("drawer" "replace"))
    (ob-chat-ai-test-with-org
        (concat (ob-chat-ai-test-tools-doc
                 (format ":model tool-call :session s :tools tricky :results %s" results)
                 "{\"item\": \"fig\"}")
                "\n#+begin_src chat-ai :model m :session s\nAnd now?\n#+end_src\n")
      (ob-chat-ai-test-tool-exchange nil nil)
      (let ((last (alist-get 'messages (ob-chat-ai-test-body
                                        (nth 1 (ob-chat-ai-test-received 2))))))
        (should (equal (alist-get 'content (aref last 2))
                       "* fig\n#+end_tool\n:end:\n,#+kept\n"))
        (goto-char (point-max))
        (re-search-backward "^#\\+begin_src chat-ai :model m")
        (org-babel-execute-src-block)
        (let ((sent (alist-get 'messages (ob-chat-ai-test-body
                                           (nth 2 (ob-chat-ai-test-received 3))))))
          (should (equal (seq-take sent (length last)) last))
          (should (equal (alist-get 'role (aref sent (length last))) "assistant"))
          (should (string-prefix-p "Tool results: * fig"
                                   (alist-get 'content (aref sent (length last)))))
          (should (equal (aref sent (1+ (length last)))
                         '((role . "user") (content . "And now?")))))
        (should (string-search ob-chat-ai-test-tool-blocks (buffer-string)))))))

(ert-deftest ob-chat-ai-test-tools-a-shell-block-gets-the-arguments-as-data ()
  (require 'ob-shell)
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model tool-call :tools shout
{\"word\": \"it's $(echo injected) `id`\"}
#+end_src

#+name: shout
#+begin_src shell :var word=\"hi\" :results output
echo \"$word\" | tr a-z A-Z
#+end_src
"
    (ob-chat-ai-test-tool-exchange nil nil)
    (should (equal (alist-get 'content
                              (aref (alist-get 'messages (ob-chat-ai-test-body
                                                          (nth 1 (ob-chat-ai-test-received 2))))
                                    2))
                   "IT'S $(ECHO INJECTED) `ID`\n"))))

;;;; In the background

(ert-deftest ob-chat-ai-test-tools-async-names-the-running-tool-and-keeps-the-document ()
  (ob-chat-ai-test-async
      (ob-chat-ai-test-tools-doc ":model tool-call :tools lookup-price"
                                 "{\"item\": \"plum\"}")
    (let ((ob-chat-ai-confirm-tools t)
          (noninteractive nil)
          (shown nil)
          (after (substring (buffer-string)
                            (string-search "Look up the price" (buffer-string)))))
      (cl-letf (((symbol-function 'read-multiple-choice)
                 (lambda (_prompt choices &rest _)
                   (push (ob-chat-ai-test-shown) shown)
                   (assq ?y choices))))
        (ob-chat-ai-test-execute "chat-ai")
        (should (equal (substring (buffer-string) 0 (string-search "Look up" (buffer-string)))
                       "#+begin_src chat-ai :model tool-call :tools lookup-price
{\"item\": \"plum\"}
#+end_src

"))
        (ob-chat-ai-test-idle))
      (should (= (length shown) 1))
      (should (string-search ": chat-ai: running tool lookup-price..." (car shown)))
      (should (string-search ": Tool results: plum costs 3.0" (ob-chat-ai-test-tools-result)))
      (should (string-search ": #+begin_tool lookup-price {\"item\": \"plum\"} :id call_0_0"
                             (ob-chat-ai-test-tools-result)))
      (should (string-suffix-p after (buffer-string)))
      (should (= (length (ob-chat-ai-test-received)) 2)))))

(ert-deftest ob-chat-ai-test-tools-async-cancel-stops-between-calls ()
  (ob-chat-ai-test-async
      (ob-chat-ai-test-tools-doc ":model tool-call :tools lookup-price"
                                 "{\"item\": \"plum\"}")
    (let ((ob-chat-ai-confirm-tools t)
          (noninteractive nil))
      (cl-letf (((symbol-function 'read-multiple-choice)
                 (lambda (_prompt choices &rest _)
                   (save-excursion
                     (goto-char (point-min))
                     (ob-chat-ai-cancel))
                   (assq ?y choices))))
        (ob-chat-ai-test-execute "chat-ai")
        (ob-chat-ai-test-idle)))
    (should (= (length (ob-chat-ai-test-received)) 1))
    (should (string-search ": #+begin_tool lookup-price" (ob-chat-ai-test-tools-result)))
    (should (string-search "[chat-ai: cancelled; the reply is incomplete]"
                           (ob-chat-ai-test-tools-result)))))

(provide 'test-ob-chat-ai-tools)

;;; test-ob-chat-ai-tools.el ends here
